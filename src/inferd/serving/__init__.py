"""Wire request -> engine call -> wire response, one module per task."""
