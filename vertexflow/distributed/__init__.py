"""Scale-out: one copy, sync or verify job run as shards on a Dask distributed cluster.

``vertexflow copy|sync|verify SRC DST --cluster tcp://scheduler:8786`` (or
``--cluster local:N``) lists the source once on the driver, cuts it into
key-range shards (:mod:`.shards`), submits one Dask task per shard
(:mod:`.driver`) and runs vertexflow's own async engine on each shard inside
a worker (:mod:`.worker`). The driver's journal records the shards
(:mod:`.shardlog`), so a rerun skips those already done; the job's
bandwidth limit is split across the running shards (:mod:`.bandwidth`);
progress from every worker adds up to one bar on the client.

Dask is optional: ``pip install 'vertexflow[dask]'``. Nothing here is
imported unless ``--cluster`` is given. docs/cluster.md is the user's guide.
"""
