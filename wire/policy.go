package wire

// AccessPolicy is a shared access policy as the hub's policy routes
// (/policies) carry it, in the shape of Azure's
// SharedAccessSignatureAuthorizationRule: the rights are one string of
// names separated by commas, "RegistryRead, ServiceConnect". The keys are
// present only where the call's purpose is to give them out (listkeys, the
// answer to a PUT or a renewkey) and in a PUT that chooses them.
type AccessPolicy struct {
	KeyName      string `json:"keyName"`
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
	Rights       string `json:"rights"`
}

// AccessPolicyList is the answer of GET /policies and POST
// /policies/listkeys, as Azure's listkeys answers: {"value": [...]}.
type AccessPolicyList struct {
	Value []AccessPolicy `json:"value"`
}

// Error codes of answers about access policies. Azure manages policies
// outside the hub's own API and has none for them, so they are Tether's.
const (
	CodePolicyNotFound = 404900 // PolicyNotFound
	CodePolicyExists   = 409900 // PolicyAlreadyExists
)
