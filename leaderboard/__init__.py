"""The static leaderboard site: renders ``submissions/`` into HTML with Jinja2."""
