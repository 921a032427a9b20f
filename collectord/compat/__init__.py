"""Drop-in replacements for other tools' collectors, backed by the collectord daemon.

``collectord.compat.stytra.DataCollector`` stands in for stytra's
``stytra.collectors.DataCollector``: change one import and the experiment
saves through the daemon. See docs/lightparam.md.
"""
