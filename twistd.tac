"""Run the B2BUA with ``twistd -ny twistd.tac``.

The config file comes from the B2BUA_CONFIG environment variable
(default ``etc/b2bua.toml`` next to this file).
"""

import os

from twisted.application import service

from b2bua.tap import make_service_from_path

_here = os.path.dirname(os.path.abspath(__file__))
_config = os.environ.get("B2BUA_CONFIG") or os.path.join(_here, "etc", "b2bua.toml")

application = service.Application("b2bua")
make_service_from_path(_config).setServiceParent(application)
