"""Studies: self-contained experiments built on hwprof's stages (count, measure, ceilings, report).

* :mod:`hwprof.studies.depthwise` — dense / grouped / depthwise / pointwise convolutions at
  matched shapes: FLOPs vs time, on the measured roofline (``hwprof study depthwise``).

Submodules are not imported here, so ``python -m hwprof.studies.depthwise`` (the entry point
the Nsight Compute runs use) imports the module exactly once.
"""
