"""Key rotation: re-seal every data key to a new recipient set without re-encrypting (format 3),
rewrite format-2 objects, and rotate the host signing key with a signed transition record."""
