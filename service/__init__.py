"""Investment-product REST service: BlackSheep handlers over hand-written SQL through psqlpy."""
