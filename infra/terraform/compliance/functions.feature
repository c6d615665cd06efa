Feature: Functions run as their own service account, inside the project
  Every function has a dedicated runtime service account (granted exactly its manifest roles);
  none runs as the default compute service account or accepts traffic from the internet.

  Scenario: Every function runs as a service account created with it
    Given I have google_cloudfunctions2_function defined
    # The address of a module resource starts with module.<name>[key]. (the step anchors its regex).
    Then it must have "(module\..+\.)?google_service_account\..+" referenced

  Scenario: Functions are reachable only from inside the project (or a load balancer)
    Given I have google_cloudfunctions2_function defined
    Then it must contain service_config
    And it must contain ingress_settings
    And its value must match the "^ALLOW_INTERNAL_(ONLY|AND_GCLB)$" regex

