Feature: Messages are never lost
  Every subscription that delivers to a function (push) has a dead-letter policy and a retry policy.

  Scenario: Push subscriptions dead-letter what they cannot deliver
    Given I have google_pubsub_subscription defined
    When it has push_config
    Then it must contain dead_letter_policy
    And it must contain max_delivery_attempts

  Scenario: Push subscriptions back off between attempts
    Given I have google_pubsub_subscription defined
    When it has push_config
    Then it must contain retry_policy

  Scenario: Push subscriptions authenticate to the function
    Given I have google_pubsub_subscription defined
    When it has push_config
    Then it must contain oidc_token
