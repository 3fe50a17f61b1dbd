"""Make `import backbone` and `import generate_data` work however pytest is started
(`python -m pytest tests` or plain `pytest` from the bundle folder)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
