"""``ndsclust web``: the live console, a process of its own (the sentinel stays small).

- ``state.py``: pure: what the page shows (``status_data``, shared with ``ndsclust
  status``), the actions an operator may ask for and the directory write each one is,
  sessions and their CSRF tokens;
- ``hub.py``: follows the cluster through the RFC 4533 watch (``ldapstore.follow``) and
  pushes every change to the connected browsers as server-sent events;
- ``server.py``: the HTTP server (the standard library's, bounded in threads, request size
  and time), the page (``page.py``), the event stream, sign-in and actions.

Operator's view: README, "The web console".
"""
