"""The run layer: jobs that turn a config into durable per-image records, and what they share.

Bottom to top: ``files`` (where a run keeps its files), ``records`` (the records files, config hash, manifest) and
``shards`` (which items this process computes), ``job_parts`` (building from config, seeds, phase timing, bound
denoisers, NFE per image), ``pipelining`` (prefetch and writer threads) and ``completeness`` (is a job finished?);
then the job kinds, ``reconstruction`` (``Job``) and ``editing`` (``EditJob``, which extends it). The app picks a
job kind from ``cfg.job``; no job module knows another's caller.
"""
