"""The long-running service: ``vertexflow daemon --config daemon.toml`` (docs/daemon.md).

* :mod:`.config`: the TOML file (``[daemon]``, ``[[jobs]]``), checked before anything runs.
* :mod:`.schedule`: interval and cron schedules, allowed windows.
* :mod:`.jobs`: job states, run results, the error ring buffer (all bounded).
* :mod:`.runners`: one adapter class per job ``kind`` (sync, backup, migrate).
* :mod:`.controller`: one supervisor per job: triggers, windows, pause/cancel, backoff, alerts.
* :mod:`.service`: signals (drain, reload), the controllers, the HTTP server.
* :mod:`.http`, :mod:`.metrics`, ``static/dashboard.html``: API, Prometheus, dashboard.
"""
