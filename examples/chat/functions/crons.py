"""The chat app's cron jobs (Convex's ``convex/crons.ts``): run by the engine's executor."""

from __future__ import annotations

from engine import cron_jobs

from . import channels

crons = cron_jobs()
crons.hourly("refresh topics", channels.refresh_topics, minute_utc=0)
