"""calico-lens: network observability for clusters running Calico Open Source."""

__version__ = "0.1.0"
