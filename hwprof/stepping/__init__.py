"""A user's step as hwprof's unit of work: what it touches (:mod:`~hwprof.stepping.targets`), how it is
watched once (:mod:`~hwprof.stepping.recorder`), how it is put back (:mod:`~hwprof.stepping.snapshot`)
and the record the stages share (:mod:`~hwprof.stepping.unit`)."""
