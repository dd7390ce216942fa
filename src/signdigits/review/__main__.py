import sys

from signdigits.review.cli import main

sys.exit(main())
