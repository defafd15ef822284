import sys

from shared.tools.cli import main

sys.exit(main())
