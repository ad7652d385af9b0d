"""The static leaderboard site: renders ``submissions/`` into HTML with Jinja2 (:mod:`.build`), from the numbers of
:mod:`.tables`, the pictures of :mod:`.pictures` and :mod:`.figures`, and the plugin, sanity and verification pages of
:mod:`.pages`."""
