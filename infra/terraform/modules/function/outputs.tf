output "name" {
  description = "Deployed name of the function."
  value       = google_cloudfunctions2_function.this.name
}

output "id" {
  description = "Full resource id of the function."
  value       = google_cloudfunctions2_function.this.id
}

output "uri" {
  description = "URI of the function's Cloud Run service (the push endpoint and OIDC audience)."
  value       = google_cloudfunctions2_function.this.service_config[0].uri
}

output "service_account_email" {
  description = "The function's dedicated runtime service account."
  value       = google_service_account.runtime.email
}

output "trigger_service_account_email" {
  description = "Identity that invokes the function on events (null for http functions)."
  value       = local.is_event ? google_service_account.trigger[0].email : null
}

output "project_roles" {
  description = "Project roles granted to the runtime service account."
  value       = sort(tolist(local.project_roles))
}

output "subscriptions" {
  description = "Push subscriptions delivering to the function, topic name => subscription name."
  value       = { for t, s in google_pubsub_subscription.push : t => s.name }
}

output "scheduler_job" {
  description = "Cloud Scheduler job of a schedule trigger (null otherwise)."
  value       = var.trigger_kind == "schedule" ? google_cloud_scheduler_job.tick[0].name : null
}
