"""The invconv-deblur command line (see issue: deblurring CLI)."""
