"""The slapd configuration ndsclust ships: templates (``*.ldif.in``) and their renderer
(``render.py``), used by ``deploy/render.py``, the local lab and the tests alike."""
