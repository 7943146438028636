package dashboards

// MetricsIn exposes metricsIn to the tests.
var MetricsIn = metricsIn
