"""``rc-dashboard``: a live web dashboard of releases (server-rendered HTML on aiohttp, server-sent events).

It talks to the coordinator only through the broker, with the admin requests ``rc`` sends, and listens to
the coordinator's announcements; it never touches the store.
"""
