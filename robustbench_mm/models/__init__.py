"""The networks and what is measured on their outputs: PreActResNets (preact), accuracy and NLL (metrics)."""
