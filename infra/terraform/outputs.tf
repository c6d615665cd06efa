output "buckets" {
  description = "Logical bucket name of the manifest => real bucket name (plus _function_sources)."
  value       = { for k, b in google_storage_bucket.this : k => b.name }
}

output "topics" {
  description = "Every topic created, name => id."
  value       = { for k, t in google_pubsub_topic.this : k => t.id }
}

output "event_types" {
  description = "Event types found under event_types.schemas_dir; each expands an {event_type} trigger."
  value       = local.event_types
}

output "firestore_database" {
  description = "Name of the Firestore database."
  value       = google_firestore_database.this.name
}

output "functions" {
  description = "Per manifest function: deployed name, URI, service accounts, trigger kind, subscriptions and roles."
  value = {
    for name, m in module.function : name => {
      name                          = m.name
      uri                           = m.uri
      service_account_email         = m.service_account_email
      trigger_service_account_email = m.trigger_service_account_email
      trigger_kind                  = local.functions[name].kind
      delivery                      = local.functions[name].delivery
      subscriptions                 = m.subscriptions
      scheduler_job                 = m.scheduler_job
      project_roles                 = m.project_roles
    }
  }
}
