package policy_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/ratethrottle/ratethrottle/pkg/policy"
)

// Parse a document, compile it once, and look up what one message of a
// class may do in a tier: the message path does the last two steps.
func Example() {
	doc, err := policy.Parse([]byte(`
default_tier: free
default_class: message
classes:
  message: {rate: 60, burst: 10, user: {rate: 120}}
  typing:  {rate: 20, burst: 5, per: 10s}
tiers:
  free: {}
  pro:
    classes:
      message: {rate: 600, burst: 50, user: {rate: 1200}}
`))
	if err != nil {
		panic(err)
	}
	tab, err := policy.Compile(doc)
	if err != nil {
		panic(err)
	}
	for _, tier := range []string{"", "pro"} {
		r := tab.Tier(tier) // once per connection
		for _, class := range []string{"message", "typing", "sticker"} {
			c := r.Class(tab.Class(class)) // per message, allocation-free
			s := c.Specs[policy.LayerConnection]
			per := s.Per
			if per == 0 {
				per = time.Minute // the default period
			}
			fmt.Printf("%s %s as %s: %d per %v, burst %d\n", r.Tier, class, c.Name, s.Limit, per, s.Capacity())
		}
	}

	_, err = policy.Parse([]byte("classes: {typing: {rate: 10}}\ntiers: {pro: {classes: {typing: {rate: -5}}}}"))
	var ve *policy.ValidationError
	if errors.As(err, &ve) {
		fmt.Println(ve.Paths())
	}
	// Output:
	// free message as message: 60 per 1m0s, burst 10
	// free typing as typing: 20 per 10s, burst 5
	// free sticker as message: 60 per 1m0s, burst 10
	// pro message as message: 600 per 1m0s, burst 50
	// pro typing as typing: 20 per 10s, burst 5
	// pro sticker as message: 600 per 1m0s, burst 50
	// [tiers.pro.classes.typing.rate]
}
