from setuptools import find_packages, setup

setup(
    name="b2bua",
    version="0.1.0",
    description="Pure-Python SIP back-to-back user agent with push wake-up, on Twisted",
    python_requires=">=3.11",
    packages=find_packages(include=["b2bua", "b2bua.*", "plugins"]) + ["twisted.plugins"],
    package_data={"twisted": ["plugins/b2bua_plugin.py"], "b2bua": ["py.typed"]},
    install_requires=[
        "twisted[tls]>=23.10",
        "h2>=4.1",
        "PyJWT[crypto]>=2.8",
        "sqlite-utils>=3.35",
        "prometheus_client>=0.17",
        "zope.interface>=6",
        "redis>=5.0",              # cluster mode ([database] url); see b2bua/store/redis_client.py
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-twisted>=1.14", "hypothesis>=6"],
        # .ci/lint: mypy --strict and ruff, pinned so that a new release's checks
        # cannot fail a build that changed nothing
        "lint": ["mypy==2.4.1", "ruff==0.17.6"],
    },
    entry_points={"console_scripts": ["b2bua-admin=b2bua.admin:main"]},
)
