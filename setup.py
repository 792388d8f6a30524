"""The one compiled piece (bvh_ops/logical/_chunkwalk.c, the backup's per-row COPY chunk walk, issue
#19 goal 1, and the drill's PITR sums from the dump's rows, goal 3). Optional: where it cannot be
built (no C compiler or Python headers) the install goes on, the fingerprinter uses its numpy
reader (bvh_ops.logical.archive.WALKER says which) and the drill reads the PITR side on the
restored copy (bvh_ops.drill.dumpside.available())."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("bvh_ops.logical._chunkwalk", ["bvh_ops/logical/_chunkwalk.c"],
                             extra_compile_args=["-O2"], optional=True)])
