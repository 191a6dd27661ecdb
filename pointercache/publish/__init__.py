"""The write path: register new model versions through a registry outage, exactly once, in order.

``pointercache publish`` writes a ``Registration`` into a durable local ``Outbox`` (SQLite, WAL)
first, then tries the registry once; ``Drainer`` applies what is queued, per model in publish
order, until the registry accepts. A ``Registrar`` per registry kind (chosen by URI scheme from
``pointercache.publish.registrars.REGISTRARS``) makes each registration idempotent: the
registration's key is stored in the registry, so a retry after a lost answer finds it instead of
registering the version twice.

Modules: ``registration`` (what is registered, the key), ``outbox`` (the durable queue),
``drain`` (apply in order, retry with backoff), ``registrars`` (protocol, table, in-memory twin),
``edit`` (the manifest read-modify-write rule), ``manifests`` (file://, s3://, configmap://),
``mlflow`` (the MLflow Model Registry).
"""
