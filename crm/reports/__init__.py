"""Reports over incrementally maintained aggregates (issue 16): the case rollups and their
refresh (rollups), the period and filter language every report shares (periods), the case,
operator and team reports (cases, team) and the dashboards users build on them."""
