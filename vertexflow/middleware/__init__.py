"""Decorators around a backend: cross-cutting concerns that backends never see.

* :mod:`.throttled`: bandwidth limits (token buckets of :mod:`vertexflow.throttle`)
  on the bytes read through ``open`` and written through ``put``;
* :mod:`.adaptive`: AIMD concurrency per remote, cut when the store says
  "slow down" and grown back on success;
* :mod:`.stages`: the hash, compress and chunk stages of :mod:`vertexflow.transforms`
  as a decorator (:class:`~.stages.TransformedBackend`);
* :mod:`.base`: the delegating base class.

:func:`.wrap.wrap` assembles them in one place and fixes their order;
:mod:`.options` maps the command line onto it.
"""
