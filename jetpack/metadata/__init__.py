"""The appc metadata service and the runtime's way to it.

- :mod:`~jetpack.metadata.registry` — what is known of each registered pod (token, HMAC
  key, manifests, the answers ready as bytes) and the files that keep it across restarts;
  pure apart from those files.
- :mod:`~jetpack.metadata.client` — the control socket, from stage0 and the CLI (no
  aiohttp: ``jetpack run`` must start fast); starts the service when none runs.
- :mod:`~jetpack.metadata.service` — the aiohttp service itself
  (``jetpack metadata-service``).

Stage0 registers a pod when it prepares it and puts ``AC_METADATA_URL`` in every app's
environment; stage1 confirms the start, and, for a pod with a network namespace of its
own, listens on the pod's loopback and hands each connection to the service; removing
the pod unregisters it.
"""
