"""Render the slapd configuration of an ndsclust directory from a site file.

    render.py provider SITE --server-id N [-o FILE]
    render.py seed SITE --out-dir DIR
    render.py server SITE --name NAME --address IP:PORT --password-file FILE [-o FILE]

A launcher: the renderer, its templates and this command line are the package's
(``ndsclust.slapd.render``), so the local lab and the tests render exactly what this
renders. Run it with the Python that has ndsclust installed (``/opt/ndsclust/bin/python``);
``render.py --help`` and deploy/INSTALL.md say more.
"""

from __future__ import annotations

import sys

from ndsclust.site import parse_site
from ndsclust.slapd.render import (
    RenderError,
    fill,
    main,
    provider_ldif,
    seed_ldifs,
    server_ldif,
    ssha,
    with_operational,
)

__all__ = [
    "RenderError",
    "fill",
    "main",
    "parse_site",
    "provider_ldif",
    "seed_ldifs",
    "server_ldif",
    "ssha",
    "with_operational",
]

if __name__ == "__main__":
    sys.exit(main())
