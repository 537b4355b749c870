import sys

from ndsclust.cli import main

sys.exit(main())
