"""FIG. 6: what a primary finds in the directory when its sentinel starts.

Step 606 reads the host of each application whose primary is this server:

- host absent: an operator unloaded it (step 610 in the patent makes the primary the host
  again; here it stays unloaded until someone loads it, docs/design.md section 3);
- host = another server: this primary is "phoenixing" (step 612): the application runs
  elsewhere and comes back by failback (FIGS. 7B, 8); a cluster-aware one is loaded
  paused meanwhile;
- host = this server: primary and backups failed together; it is loaded once the local
  provider has caught up with its peers (step 614).

The actions for each case are the ordinary ones (``decide`` loads what this server hosts,
loads aware copies paused, loads nothing unhosted, and holds every start until replication
has caught up); this module only says which case was found, once, on the first cycle with
replication caught up.
"""

from __future__ import annotations

from ndsclust.model import App
from ndsclust.sentinel.actions import Action, EventKind, RecordEvent
from ndsclust.sentinel.failback import wants_paused_copy
from ndsclust.sentinel.view import Viewpoint


def registration_event(vp: Viewpoint, app: App) -> list[Action]:
    if not vp.view.registering or app.primary != vp.me:
        return []
    if app.host is None:
        text = "unloaded by an operator: staying unloaded until someone loads it"
    elif app.host == vp.me:
        text = f"simultaneous failure: the host already names {vp.me}; running it here"
    else:
        text = f"phoenixing: {app.host} hosts it; waiting for failback"
        if wants_paused_copy(vp, app):
            text += " (loaded paused here)"
    return [RecordEvent(EventKind.REGISTRATION, app.tag, text)]
