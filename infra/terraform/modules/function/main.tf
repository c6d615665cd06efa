# One Backbeat function: its own service account with exactly the manifest's roles, the 2nd-gen
# function built from the packaged zip, and its trigger. Never a public invoker.

locals {
  dashed       = replace(var.name, "_", "-")
  service_name = var.deployed_name != null ? var.deployed_name : local.dashed
  is_event     = var.trigger_kind != "http"
  use_push     = local.is_event && var.delivery == "pubsub_push"
  use_eventarc = local.is_event && var.delivery == "eventarc"

  # Service account ids are 6-30 characters: long names keep a prefix and a short hash, so they stay unique.
  runtime_sa_full = "fn-${local.service_name}"
  trigger_sa_full = "tr-${local.service_name}"
  runtime_sa_id   = length(local.runtime_sa_full) <= 30 ? local.runtime_sa_full : "${substr(local.runtime_sa_full, 0, 25)}-${substr(sha1(local.runtime_sa_full), 0, 4)}"
  trigger_sa_id   = length(local.trigger_sa_full) <= 30 ? local.trigger_sa_full : "${substr(local.trigger_sa_full, 0, 25)}-${substr(sha1(local.trigger_sa_full), 0, 4)}"

  # Publishing is granted per topic when the manifest lists the topics; every other role project-wide.
  topic_scoped_publisher = length(var.publishes) > 0
  project_roles          = toset([for r in var.roles : r if !(local.topic_scoped_publisher && r == "roles/pubsub.publisher")])

  source_topic_names = sort(keys(var.source_topics))
  first_topic        = length(local.source_topic_names) > 0 ? local.source_topic_names[0] : null
  extra_topics       = length(local.source_topic_names) > 1 ? slice(local.source_topic_names, 1, length(local.source_topic_names)) : []

  ingress = local.is_event ? "ALLOW_INTERNAL_ONLY" : var.http_ingress
}

# ---------------------------------------------------------------------------------------------------
# Identity: the runtime service account (exactly the manifest's roles) and, for event functions, a
# separate trigger identity that may only invoke this function.
# ---------------------------------------------------------------------------------------------------
resource "google_service_account" "runtime" {
  project      = var.project_id
  account_id   = local.runtime_sa_id
  display_name = "Backbeat function ${var.name}"
  description  = "Runtime identity of the ${local.service_name} function; holds exactly the roles of functions/manifest.yaml."
}

resource "google_project_iam_member" "roles" {
  for_each = local.project_roles

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.runtime.email}"
}

resource "google_pubsub_topic_iam_member" "publisher" {
  for_each = var.publishes

  project = var.project_id
  topic   = each.value
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.runtime.email}"
}

resource "google_service_account" "trigger" {
  count = local.is_event ? 1 : 0

  project      = var.project_id
  account_id   = local.trigger_sa_id
  display_name = "Backbeat trigger of ${var.name}"
  description  = "Identity Pub/Sub push or Eventarc uses to invoke ${local.service_name}; may invoke nothing else."
}

resource "google_project_iam_member" "trigger_event_receiver" {
  count = local.use_eventarc ? 1 : 0

  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = "serviceAccount:${google_service_account.trigger[0].email}"
}

# ---------------------------------------------------------------------------------------------------
# Source and function.
# ---------------------------------------------------------------------------------------------------
# Content-addressed object name: a new zip is a new object, which makes Terraform rebuild the function.
resource "google_storage_bucket_object" "source" {
  bucket       = var.source_bucket
  name         = "${var.name}/${filemd5(var.source_zip)}.zip"
  source       = var.source_zip
  content_type = "application/zip"
}

resource "google_cloudfunctions2_function" "this" {
  project      = var.project_id
  location     = var.region
  name         = local.service_name
  description  = var.description
  labels       = merge(var.labels, { function = local.dashed })
  kms_key_name = var.kms_key_name

  build_config {
    runtime     = var.runtime
    entry_point = var.entry_point
    environment_variables = {
      GOOGLE_FUNCTION_SIGNATURE_TYPE = var.signature
    }
    source {
      storage_source {
        bucket = var.source_bucket
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory               = var.memory
    available_cpu                  = var.cpu
    timeout_seconds                = var.timeout_s
    max_instance_count             = var.max_instances
    min_instance_count             = var.min_instances
    environment_variables          = var.env
    ingress_settings               = local.ingress
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.runtime.email
  }

  # eventarc delivery: the function's own trigger (Pub/Sub topic or Cloud Storage object finalize).
  dynamic "event_trigger" {
    for_each = local.use_eventarc ? [var.trigger_kind] : []
    content {
      trigger_region        = var.region
      event_type            = event_trigger.value == "bucket" ? "google.cloud.storage.object.v1.finalized" : "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic          = event_trigger.value == "bucket" ? null : var.source_topics[local.first_topic]
      retry_policy          = var.retry ? "RETRY_POLICY_RETRY" : "RETRY_POLICY_DO_NOT_RETRY"
      service_account_email = google_service_account.trigger[0].email

      dynamic "event_filters" {
        for_each = event_trigger.value == "bucket" ? [var.trigger_bucket] : []
        content {
          attribute = "bucket"
          value     = event_filters.value
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = var.trigger_kind != "bucket" || var.trigger_bucket != null
      error_message = "Function ${var.name}: a bucket trigger needs trigger_bucket."
    }
    precondition {
      condition     = !contains(["topic", "schedule"], var.trigger_kind) || length(var.source_topics) > 0
      error_message = "Function ${var.name}: a topic or schedule trigger needs at least one source topic (did {event_type} expand to no event type? check event_types.schemas_dir)."
    }
    precondition {
      condition     = !local.use_push || var.dead_letter_topic_id != null
      error_message = "Function ${var.name}: pubsub_push delivery needs a dead-letter topic."
    }
    precondition {
      condition     = !local.use_push || var.pubsub_service_agent != null
      error_message = "Function ${var.name}: pubsub_push delivery needs pubsub_service_agent (it forwards dead letters)."
    }
    precondition {
      condition     = !local.is_event || var.timeout_s <= 540
      error_message = "Function ${var.name}: event functions time out after at most 540 s."
    }
  }
}

# The trigger identity (events) or the listed members (http) may invoke the function's Cloud Run service.
# Public members are refused by the variables' validation: there is no public invoker.
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  # Static keys: the trigger identity's email is only known after apply.
  for_each = local.is_event ? { trigger = "serviceAccount:${google_service_account.trigger[0].email}" } : { for m in var.invokers : m => m }

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this.service_config[0].service
  role     = "roles/run.invoker"
  member   = each.value
}

# ---------------------------------------------------------------------------------------------------
# pubsub_push delivery: one push subscription per source topic, authenticated with the trigger
# identity, with retry backoff and a dead-letter policy. The topic goes in the push path, so
# functions-framework fills the CloudEvent source (//pubsub.googleapis.com/projects/P/topics/T).
# ---------------------------------------------------------------------------------------------------
resource "google_pubsub_subscription" "push" {
  for_each = local.use_push ? var.source_topics : {}

  project                    = var.project_id
  name                       = "${local.service_name}.${each.key}"
  topic                      = each.value
  ack_deadline_seconds       = min(600, max(10, var.timeout_s))
  message_retention_duration = "604800s"
  labels                     = merge(var.labels, { function = local.dashed })

  push_config {
    push_endpoint = "${google_cloudfunctions2_function.this.service_config[0].uri}/projects/${var.project_id}/topics/${each.key}"
    oidc_token {
      service_account_email = google_service_account.trigger[0].email
      audience              = google_cloudfunctions2_function.this.service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = var.dead_letter_topic_id
    max_delivery_attempts = var.retry ? var.max_delivery_attempts : 5
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [google_cloud_run_v2_service_iam_member.invoker]
}

# Pub/Sub forwards dead letters as its service agent, which must be able to pull from the subscription.
resource "google_pubsub_subscription_iam_member" "dead_letter_forwarder" {
  for_each = local.use_push ? var.source_topics : {}

  project      = var.project_id
  subscription = google_pubsub_subscription.push[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = var.pubsub_service_agent
}

# Bucket trigger, pubsub_push: Cloud Storage notifies OBJECT_FINALIZE under the prefix on the
# function's notification topic; the function receives the notification as a Pub/Sub CloudEvent.
resource "google_storage_notification" "finalize" {
  count = local.use_push && var.trigger_kind == "bucket" ? 1 : 0

  bucket             = var.trigger_bucket
  payload_format     = "JSON_API_V1"
  topic              = var.source_topics[local.first_topic]
  event_types        = ["OBJECT_FINALIZE"]
  object_name_prefix = var.trigger_prefix != "" ? var.trigger_prefix : null
}

# ---------------------------------------------------------------------------------------------------
# eventarc delivery of an {event_type}-expanded topic list: a function has one event_trigger, the
# other topics get their own Eventarc trigger to the same Cloud Run service.
# ---------------------------------------------------------------------------------------------------
resource "google_eventarc_trigger" "extra" {
  for_each = local.use_eventarc && var.trigger_kind != "bucket" ? toset(local.extra_topics) : toset([])

  project         = var.project_id
  location        = var.region
  name            = "${local.service_name}-${substr(sha1(each.value), 0, 8)}"
  service_account = google_service_account.trigger[0].email
  labels          = merge(var.labels, { function = local.dashed })

  matching_criteria {
    attribute = "type"
    value     = "google.cloud.pubsub.topic.v1.messagePublished"
  }

  transport {
    pubsub {
      topic = var.source_topics[each.value]
    }
  }

  destination {
    cloud_run_service {
      service = google_cloudfunctions2_function.this.service_config[0].service
      region  = var.region
    }
  }
}

# ---------------------------------------------------------------------------------------------------
# Schedule trigger: Cloud Scheduler publishes a tick on topic tick.<function>, delivered like any topic.
# ---------------------------------------------------------------------------------------------------
resource "google_cloud_scheduler_job" "tick" {
  count = var.trigger_kind == "schedule" ? 1 : 0

  project     = var.project_id
  region      = var.region
  name        = "${local.service_name}-tick"
  description = "Tick of ${local.service_name}"
  schedule    = var.schedule
  time_zone   = "Etc/UTC"

  pubsub_target {
    topic_name = var.source_topics[local.first_topic]
    data       = base64encode(jsonencode({ function = var.name }))
    attributes = { function = var.name }
  }
}
