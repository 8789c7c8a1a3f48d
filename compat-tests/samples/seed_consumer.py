from kafka import KafkaConsumer

consumer = KafkaConsumer('test-topic', group_id='test-group', bootstrap_servers='localhost:9092')
consumer.subscribe(['test-topic'])

for msg in consumer:
    print(msg.value)
