package wire

// Class is what the wire program decided a packet is. The values match enum
// wire_class in bpf/wire.bpf.c.
type Class uint8

const (
	ClassPlaintext Class = iota
	ClassESP
	ClassESPInUDP
	ClassIKE
	ClassAH
	ClassUDPFragment
	ClassNonIP
	numClasses
)

var classNames = [numClasses]string{
	ClassPlaintext:   "plaintext",
	ClassESP:         "esp",
	ClassESPInUDP:    "esp_in_udp",
	ClassIKE:         "ike",
	ClassAH:          "ah",
	ClassUDPFragment: "udp_fragment",
	ClassNonIP:       "non_ip",
}

// String gives the class as a metric label value.
func (c Class) String() string {
	if c < numClasses {
		return classNames[c]
	}
	return "unknown"
}

// Direction is ingress or egress, as enum wire_direction.
type Direction uint8

const (
	Ingress Direction = iota
	Egress
)

// String gives the direction as a metric label value.
func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}
