"""`python -m pdvault_client.cli ...`: `pdv ...` without the installed script."""

import sys

from pdvault_client.cli.entry import main

sys.exit(main())
