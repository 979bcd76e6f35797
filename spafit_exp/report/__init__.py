"""Layer 2 (torch-free): records to cells, tables, costs, significance and plots."""
