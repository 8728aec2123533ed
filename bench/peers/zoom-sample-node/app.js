// A bench peer, never part of reactor: a webhook receiver written the way Zoom's published Node.js
// webhook sample (github.com/zoom/webhook-sample) is written, so `make bench` can show what the
// receiver most users start from achieves on the same machine. Like the sample it parses the body
// with Express's JSON parser, rebuilds the signed message as `v0:{timestamp}:{JSON.stringify(body)}`,
// compares an HMAC-SHA256 of it with x-zm-signature, answers endpoint.url_validation with plainToken
// and encryptedToken, logs the event and answers 200 JSON; it stores nothing and runs in one process
// (`node app.js`, as the sample is started).
//
// Two departures, both so that the bench measures what it says: a bad signature is answered 401 (the
// sample answers 200 with an "Unauthorized" message, which the bench would count as throughput), and
// the sample's debug prints of the rebuilt message and its signature are left out (the body and the
// headers are still logged, as the sample logs them).
const crypto = require('crypto')
const express = require('express')

const secret = process.env.ZOOM_WEBHOOK_SECRET_TOKEN
if (!secret) {
  console.error('ZOOM_WEBHOOK_SECRET_TOKEN is not set: set it to the app\'s webhook secret token')
  process.exit(2)
}
const port = Number(process.env.PORT || 4000)

const app = express()
app.use(express.json())

app.get('/readyz', (req, res) => {
  res.status(200).send('ok')
})

app.post('/webhooks/zoom', (req, res) => {
  console.log(req.body)
  console.log(req.headers)

  const message = `v0:${req.headers['x-zm-request-timestamp']}:${JSON.stringify(req.body)}`
  const signature = `v0=${crypto.createHmac('sha256', secret).update(message).digest('hex')}`

  if (req.headers['x-zm-signature'] !== signature) {
    console.log('Unauthorized request to the webhook sample.')
    res.status(401).json({ message: 'Unauthorized request to the webhook sample.', status: 401 })
    return
  }
  if (req.body.event === 'endpoint.url_validation') {
    const plainToken = req.body.payload.plainToken
    const encryptedToken = crypto.createHmac('sha256', secret).update(plainToken).digest('hex')
    console.log({ plainToken, encryptedToken })
    res.status(200).json({ plainToken, encryptedToken })
    return
  }
  const response = { message: 'Authorized request to the webhook sample.', status: 200 }
  console.log(response.message)
  res.status(200).json(response)
})

app.listen(port, '127.0.0.1', () => console.log(`webhook sample listening on 127.0.0.1:${port}`))
