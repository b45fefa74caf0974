"""falw_ray: tune and compare unlearning methods on long-tailed forget sets, judged as gaps to Retrain."""
__version__ = "0.1.0"
