"""twistd plugin: ``twistd -n b2bua --config etc/b2bua.toml``."""

from b2bua.tap import B2buaServiceMaker

serviceMaker = B2buaServiceMaker()
