# Backbeat on Google Cloud: everything functions/manifest.yaml declares (see manifest.tf for how it is read).

provider "google" {
  project = var.project_id
  region  = local.region
}

provider "google-beta" {
  project = var.project_id
  region  = local.region
}

locals {
  source_bucket_name = var.source_bucket_name != null ? var.source_bucket_name : "${var.project_id}-${local.prefix_dash}function-sources"
  bucket_location    = var.bucket_location != null ? var.bucket_location : upper(local.region)
  labels             = merge({ app = "backbeat", managed-by = "terraform" }, var.labels)
  pubsub_agent       = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  storage_agent      = "serviceAccount:${data.google_storage_project_service_account.this.email_address}"
  # Buckets of the manifest plus the one holding the functions' source zips.
  all_buckets = merge(local.bucket_names, { _function_sources = local.source_bucket_name })
}

data "google_project" "this" {
  project_id = var.project_id
}

data "google_storage_project_service_account" "this" {
  project = var.project_id
}

# ---------------------------------------------------------------------------------------------------
# Buckets: uniform bucket-level access, public access prevention enforced, versioned, CMEK optional.
# ---------------------------------------------------------------------------------------------------
resource "google_storage_bucket" "this" {
  #checkov:skip=CKV_GCP_62:Access is recorded by Cloud Audit Logs (Data Access logs for storage.googleapis.com); a usage-log bucket would itself need a log bucket.
  for_each = local.all_buckets

  project                     = var.project_id
  name                        = each.value
  location                    = local.bucket_location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy
  labels                      = merge(local.labels, { bucket = replace(trimprefix(each.key, "_"), "_", "-") })

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_version_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }
}

# ---------------------------------------------------------------------------------------------------
# Topics: declared, trigger, tick, bucket-notification, published-to and dead-letter topics.
# ---------------------------------------------------------------------------------------------------
resource "google_pubsub_topic" "this" {
  for_each = local.topic_names

  project      = var.project_id
  name         = each.value
  kms_key_name = var.kms_key_name
  labels       = local.labels
}

# A dead-letter topic without a subscription drops what it receives: each one gets a pull
# subscription that keeps dead letters for a week, for inspection and replay.
resource "google_pubsub_subscription" "dead_letter_hold" {
  for_each = local.dead_letter_topics

  project                    = var.project_id
  name                       = "${each.value}.hold"
  topic                      = google_pubsub_topic.this[each.value].id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  retain_acked_messages      = false
  labels                     = merge(local.labels, { role = "dead-letter-hold" })

  expiration_policy {
    ttl = ""
  }
}

# Pub/Sub forwards undeliverable messages as its own service agent: it must publish to the dead-letter topics.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = local.dead_letter_topics

  project = var.project_id
  topic   = google_pubsub_topic.this[each.value].name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

# Cloud Storage notifications are published by the Storage service agent.
resource "google_pubsub_topic_iam_member" "storage_notifications" {
  for_each = local.notify_topics

  project = var.project_id
  topic   = google_pubsub_topic.this[each.value].name
  role    = "roles/pubsub.publisher"
  member  = local.storage_agent
}

# Eventarc's Cloud Storage triggers need the Storage service agent to publish in the project.
resource "google_project_iam_member" "storage_agent_eventarc" {
  count = anytrue([for f in local.functions : f.kind == "bucket" && f.delivery == "eventarc"]) ? 1 : 0

  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = local.storage_agent
}

# ---------------------------------------------------------------------------------------------------
# Firestore (native mode): the documents port (hours, files, task state).
# ---------------------------------------------------------------------------------------------------
resource "google_firestore_database" "this" {
  project                           = var.project_id
  name                              = "(default)"
  location_id                       = var.firestore_location != null ? var.firestore_location : local.region
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "PESSIMISTIC"
  app_engine_integration_mode       = "DISABLED"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = var.deletion_protection ? "ABANDON" : "DELETE"

  dynamic "cmek_config" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = cmek_config.value
    }
  }
}

# ---------------------------------------------------------------------------------------------------
# One module call per function of the manifest.
# ---------------------------------------------------------------------------------------------------
module "function" {
  source   = "./modules/function"
  for_each = local.functions

  project_id    = var.project_id
  region        = each.value.region
  name          = each.key
  deployed_name = each.value.deployed_name
  description   = "Backbeat ${each.key} (${each.value.source}, ${each.value.kind} trigger)"
  runtime       = each.value.runtime
  entry_point   = each.value.entry_point
  signature     = each.value.signature
  memory        = each.value.memory
  cpu           = each.value.cpu
  timeout_s     = each.value.timeout_s
  max_instances = each.value.max_instances
  min_instances = each.value.min_instances
  env           = each.value.env
  roles         = each.value.roles
  labels        = local.labels
  kms_key_name  = var.kms_key_name

  source_bucket = google_storage_bucket.this["_function_sources"].name
  source_zip    = each.value.zip_path

  trigger_kind          = each.value.kind
  delivery              = each.value.delivery
  retry                 = each.value.retry
  max_delivery_attempts = each.value.max_attempts
  source_topics         = { for t in local.source_topics[each.key] : t => google_pubsub_topic.this[t].id }
  trigger_bucket        = each.value.bucket != null ? google_storage_bucket.this[each.value.bucket].name : null
  trigger_prefix        = each.value.prefix
  schedule              = each.value.schedule
  dead_letter_topic_id  = each.value.kind != "http" ? google_pubsub_topic.this[each.value.dead_letter_topic].id : null
  publishes             = { for t in each.value.publishes : t => google_pubsub_topic.this[t].id }
  pubsub_service_agent  = local.pubsub_agent
  invokers              = lookup(var.http_invokers, each.key, [])
  http_ingress          = var.http_ingress

  # Notifications and dead-lettering only work once the service agents may publish.
  depends_on = [
    google_pubsub_topic_iam_member.storage_notifications,
    google_pubsub_topic_iam_member.dead_letter_publisher,
    google_project_iam_member.storage_agent_eventarc,
  ]
}
