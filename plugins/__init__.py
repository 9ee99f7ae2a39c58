"""Routing plugins shipped with the B2BUA.

Each module holds one class providing `b2bua.routing.IRouter` (named by the module's
`Router` attribute) and is selected in the config with `plugin = "<module name>"`.
Plugins of your own live in any importable package and are named `"package.module:Class"`.
"""
