Feature: No public invoker
  No function, service or topic grants anything to allUsers or allAuthenticatedUsers.

  # A member computed from a service account created in the same plan is unknown until apply (and
  # never public): "When it has member" keeps the members the plan knows.
  Scenario Outline: IAM members are never public
    Given I have <resource> defined
    When it has member
    Then it must contain member
    And its value must not match the "^(allUsers|allAuthenticatedUsers)$" regex

    Examples:
      | resource                                 |
      | google_cloud_run_v2_service_iam_member   |
      | google_cloud_run_service_iam_member      |
      | google_cloudfunctions2_function_iam_member |
      | google_cloudfunctions_function_iam_member |
      | google_pubsub_topic_iam_member           |
      | google_pubsub_subscription_iam_member    |
      | google_storage_bucket_iam_member         |

  Scenario Outline: IAM bindings never list a public member
    Given I have <resource> defined
    Then it must contain members
    And its value must not contain allUsers
    And its value must not contain allAuthenticatedUsers

    Examples:
      | resource                                  |
      | google_cloud_run_v2_service_iam_binding   |
      | google_cloudfunctions2_function_iam_binding |
      | google_storage_bucket_iam_binding         |
