"""The two servers predictq is measured beside; neither is part of the product."""
