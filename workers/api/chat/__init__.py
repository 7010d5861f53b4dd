"""The chat surface, without the web framework: the command language (`commands`), the
platforms' request bodies (`forms`), carrying a command out (`handler`), and where a run
started from chat reports (`render`, `notify`, `watcher`). The routes are `workers.api.http.chat`."""
