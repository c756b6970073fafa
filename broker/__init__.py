"""Writ broker: the token service, its decision, audit and admin surface."""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

# No `writ` command shows a user a third-party warning (docs/development.md). Each filter names
# one message and the one module that raises it, as pytest's filterwarnings in pyproject does.
# pyspiffe's JWT bundle names dsa.DSAPublicKey at import; cryptography >= 51 deprecates DSA.
warnings.filterwarnings(
    "ignore",
    message="DSA is deprecated",
    category=CryptographyDeprecationWarning,
    module="spiffe.bundle.jwt_bundle.jwt_bundle",
)
