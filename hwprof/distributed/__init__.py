"""Beyond one device: data-parallel (DDP) and sharded (FSDP2) training profiled under ``torchrun``.

* :mod:`hwprof.distributed.measure` -- ``measure(model, inputs, parallel="ddp"|"fsdp")``: every rank of
  an initialised process group measures its own step; rank 0 gathers the records
  (:mod:`hwprof.distributed.records`);
* :mod:`hwprof.distributed.collectives` -- collectives counted from what dispatches, busbw;
* :mod:`hwprof.distributed.timeline` -- compute, communication and exposed communication per phase;
* :mod:`hwprof.distributed.ceilings` -- the communication ceiling (busbw over message sizes);
* :mod:`hwprof.distributed.predict` -- per-rank FLOPs, collective bytes and peak memory for any world
  size, in one process, on torch's fake process group;
* :mod:`hwprof.distributed.wrap`, :mod:`hwprof.distributed.group` -- the wrappers and the process group.

``hwprof.measure_distributed`` and ``hwprof.predict_distributed`` are the first and the last.
"""
