"""Delivery channels: ``base`` (the protocol and the error), one module per channel, and
``registry`` — the only module that knows them all and maps ``[alerting]`` to channels."""
