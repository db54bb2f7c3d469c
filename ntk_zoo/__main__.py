import sys

from ntk_zoo.cli import main

sys.exit(main())
