package xfrmstat

// meanings are the kernel's own descriptions of its XFRM MIB counters
// (Documentation/networking/xfrm_proc.rst), with the usual cause where the
// kernel text alone does not tell an operator what to look at. Every counter
// counts dropped packets.
var meanings = map[string]string{
	"XfrmInError":             "Inbound packets dropped for an error not counted by a more specific counter.",
	"XfrmInBufferError":       "Inbound packets dropped because no buffer was left.",
	"XfrmInHdrError":          "Inbound packets dropped for a header error.",
	"XfrmInNoStates":          "Inbound packets dropped because no SA matched (wrong or missing inbound SPI, address or protocol).",
	"XfrmInStateProtoError":   "Inbound packets dropped by a transformation protocol error, e.g. a wrong key (ICV/integrity failure).",
	"XfrmInStateModeError":    "Inbound packets dropped by a transformation mode error.",
	"XfrmInStateSeqError":     "Inbound packets dropped because the sequence number was outside the replay window (replayed or too old).",
	"XfrmInStateExpired":      "Inbound packets dropped because the SA had expired.",
	"XfrmInStateMismatch":     "Inbound packets dropped because the SA's options did not match, e.g. a mismatched UDP encapsulation type.",
	"XfrmInStateInvalid":      "Inbound packets dropped because the SA was invalid.",
	"XfrmInTmplMismatch":      "Inbound packets dropped because no policy template matched the SAs used (SAs are right, policy is wrong).",
	"XfrmInNoPols":            "Inbound packets dropped because no policy was found for the SAs used.",
	"XfrmInPolBlock":          "Inbound packets discarded by a blocking policy.",
	"XfrmInPolError":          "Inbound packets dropped for a policy error.",
	"XfrmOutError":            "Outbound packets dropped for an error not counted by a more specific counter.",
	"XfrmOutBundleGenError":   "Outbound packets dropped because bundle generation failed.",
	"XfrmOutBundleCheckError": "Outbound packets dropped because the bundle check failed.",
	"XfrmOutNoStates":         "Outbound packets dropped because a policy requires an SA that does not exist (IKE not established).",
	"XfrmOutStateProtoError":  "Outbound packets dropped by a transformation protocol error.",
	"XfrmOutStateModeError":   "Outbound packets dropped by a transformation mode error.",
	"XfrmOutStateSeqError":    "Outbound packets dropped because the SA's sequence number overflowed (rekey came too late).",
	"XfrmOutStateExpired":     "Outbound packets dropped because the SA had expired.",
	"XfrmOutPolBlock":         "Outbound packets discarded by a blocking policy.",
	"XfrmOutPolDead":          "Outbound packets dropped because their policy was dead (being removed).",
	"XfrmOutPolError":         "Outbound packets dropped for a policy error.",
	"XfrmFwdHdrError":         "Forwarded packets dropped because forward routing of the packet was not allowed.",
	"XfrmOutStateInvalid":     "Outbound packets dropped because the SA was invalid, perhaps expired.",
	"XfrmAcquireError":        "Packets dropped because an SA was used before it was fully acquired.",
	"XfrmOutStateDirError":    "Outbound packets dropped because the SA found is marked for the inbound direction.",
	"XfrmInStateDirError":     "Inbound packets dropped because the SA found is marked for the outbound direction.",
	"XfrmInIptfsError":        "Inbound packets dropped by an IP-TFS processing error.",
	"XfrmOutNoQueueSpace":     "Outbound packets dropped because the IP-TFS output queue was full.",
}

// Meaning returns the kernel's description of a counter, and false for a
// counter this version does not know (a newer kernel's).
func Meaning(name string) (string, bool) {
	m, ok := meanings[name]
	return m, ok
}

// Known lists the counters with a known meaning in the kernel's order
// (include/uapi/linux/snmp.h).
func Known() []string {
	return []string{
		"XfrmInError", "XfrmInBufferError", "XfrmInHdrError", "XfrmInNoStates", "XfrmInStateProtoError",
		"XfrmInStateModeError", "XfrmInStateSeqError", "XfrmInStateExpired", "XfrmInStateMismatch",
		"XfrmInStateInvalid", "XfrmInTmplMismatch", "XfrmInNoPols", "XfrmInPolBlock", "XfrmInPolError",
		"XfrmOutError", "XfrmOutBundleGenError", "XfrmOutBundleCheckError", "XfrmOutNoStates",
		"XfrmOutStateProtoError", "XfrmOutStateModeError", "XfrmOutStateSeqError", "XfrmOutStateExpired",
		"XfrmOutPolBlock", "XfrmOutPolDead", "XfrmOutPolError", "XfrmFwdHdrError", "XfrmOutStateInvalid",
		"XfrmAcquireError", "XfrmOutStateDirError", "XfrmInStateDirError", "XfrmInIptfsError", "XfrmOutNoQueueSpace",
	}
}
