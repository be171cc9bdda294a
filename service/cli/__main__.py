"""``python -m service.cli``: the ``flashsale`` console script."""

import sys

from service.cli.main import main

sys.exit(main())
