"""A small chat app on convexlite: users, channels, messages (the ``make demo`` job)."""
